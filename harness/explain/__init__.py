"""Looking inside and across models: predictions on your images, attention maps, A against B."""
