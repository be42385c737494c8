//! Rebuild when a migration is added: `sqlx::migrate!` embeds the folder's files, and cargo
//! only tracks files it already knows of.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
