"""The execution side: runs on the tuned bare-metal host."""
