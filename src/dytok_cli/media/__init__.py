"""What comes from files: video decoding and sampling, the on-disk cache, which files a command names, and
what is said in a video (subtitle files, its audio track transcribed)."""
