"""`gan`: the command line of the GAN service (HTTP API only)."""
