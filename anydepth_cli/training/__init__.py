"""`anydepth train`: data, loss, the training loop and multi-process set-up."""
