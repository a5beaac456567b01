"""`anydepth serve`: the model kept loaded behind an HTTP API and a web page (the optional `serve` extra)."""
