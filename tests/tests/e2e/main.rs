//! End-to-end tests of the scheduler and workers, each scenario on SQLite
//! and on PostgreSQL (see `pulp_tests::both_databases!`).

mod bad_input;
mod cancel;
mod cli;
mod config;
mod content;
mod faults;
mod groups;
mod health;
mod listing;
mod observability;
mod pipeline;
mod purge;
mod python_client;
mod quickstart;
mod replicas;
mod reservations;
mod security;
mod slots;
mod tasks;
