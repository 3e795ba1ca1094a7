"""`rdo run`, `rdo prepare`, `rdo report`: stages keyed by content, dry run, report."""
