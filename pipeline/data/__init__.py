"""Training data: WikiText (download, whitespace pairs), your own text files, prepared memory-mapped corpora,
NSP pairs and MLM masks, and the sharded batch streams; `sources` picks among them for a config."""
