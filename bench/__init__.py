"""Side-by-side benchmark of the services against Feast and MLflow serving (``make bench``)."""
