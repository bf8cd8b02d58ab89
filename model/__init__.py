"""Fast-weight associative memory models (Ba, Hinton et al., NIPS 2016) and their baselines, in PyTorch."""
