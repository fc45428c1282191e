"""The engine host itself: the intended tuning profile and a verifier that compares it with the
live kernel (``quayside host check``)."""
