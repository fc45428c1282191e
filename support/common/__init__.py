"""What every support service shares: settings, logging, the feed source, the HTTP face."""
