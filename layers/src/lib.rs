//! tower layers for trpc.
