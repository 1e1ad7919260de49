"""The audio codecs (a VAE and a mel codec), their training and the latent cache."""
