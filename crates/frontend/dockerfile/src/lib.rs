//! Dockerfile front end: lossless syntax tree with spans, parser directives, heredocs, and typed instructions.
