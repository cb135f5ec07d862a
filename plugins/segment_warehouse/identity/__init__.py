"""Identity resolution helpers: the Splink matcher (settings, trained model, train CLI)."""
