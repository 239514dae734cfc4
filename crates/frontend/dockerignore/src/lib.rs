//! .dockerignore reading and pattern matching, exactly as Docker does it.
