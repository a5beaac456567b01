"""Photos, folders and videos through a predictor, from opening it to the files written."""
