//! End-to-end tests for trpc live in `tests/`. This library holds what the
//! tests and examples share: [`pki`], a throwaway certificate authority.

pub mod pki;
