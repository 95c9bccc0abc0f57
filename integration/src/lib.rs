//! End-to-end tests for trpc live in `tests/`.
