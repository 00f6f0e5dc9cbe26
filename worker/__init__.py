"""The service layer, composition root and command line of slatimer."""
