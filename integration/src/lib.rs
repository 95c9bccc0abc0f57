//! End-to-end tests for trpc live in `tests/`. This library holds what the
//! tests and examples share: [`pki`], a throwaway certificate authority;
//! [`interop`], the gRPC interop suite's test service and cases; [`etcd`], a
//! real etcd server per test; [`replica`], replica processes for failure tests.

pub mod etcd;
pub mod interop;
pub mod pki;
pub mod replica;
