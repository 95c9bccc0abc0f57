//! End-to-end tests for trpc live in `tests/`. This library holds what the
//! tests and examples share: [`pki`], a throwaway certificate authority;
//! [`etcd`], a real etcd server per test; [`replica`], replica processes for
//! failure tests.

pub mod etcd;
pub mod pki;
pub mod replica;
