//! `sqlx::migrate!` embeds the files of `migrations/` at compile time, but Cargo only knows to
//! rebuild the crate when its sources change: without this, a new or edited migration file alone
//! would leave a build with the old migrations embedded.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
