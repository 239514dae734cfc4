//! Docker's shell-word lexer: variable expansion, quoting and word splitting for Dockerfile arguments.
