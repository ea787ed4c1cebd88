"""Admin commands (gc, show, metrics, lint, plan): never imported by the plugin path."""
