"""usePodCidr sources: files, the Kubernetes API, the cache.  Loaded only for configs that ask."""
