"""Small shared helpers: atomic writes, content fingerprints, distributed shares, resumable shards."""
