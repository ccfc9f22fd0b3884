"""What comes from files: video decoding and sampling, the on-disk cache, which files a command names."""
