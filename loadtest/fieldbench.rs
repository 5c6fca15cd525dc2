//! The cost of sealing customers' fields (R9.9, issue 16): seals and opens the name, email and
//! attributes of a typical customer, and computes its email's blind index, many times, on one core.
//!
//! ```text
//! cargo run --release --example fieldbench -- 200000
//! ```

#![allow(clippy::expect_used)]

use std::time::Instant;

use insights::store::fields::{Column, FieldKeys};
use uuid::Uuid;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let keys = FieldKeys::new(&[7; 32], None).expect("keys");
    let (org, customer) = (Uuid::new_v4(), Uuid::new_v4());
    let name = "Ada Lovelace";
    let email = "ada.lovelace@example.com";
    let attributes =
        serde_json::json!({"plan": "enterprise", "seats": 250, "region": "eu-west", "tags": ["vip", "beta"]});

    let started = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..n {
        sealed = vec![
            keys.seal_text(org, customer, Column::Name, Some(name))
                .expect("seal"),
            keys.seal_text(org, customer, Column::Email, Some(email))
                .expect("seal"),
            keys.seal_json(org, customer, &attributes).expect("seal"),
        ];
        std::hint::black_box(keys.blind(org, email));
    }
    let write = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            keys.open_text(org, customer, Column::Name, sealed[0].as_deref())
                .expect("open"),
        );
        std::hint::black_box(
            keys.open_text(org, customer, Column::Email, sealed[1].as_deref())
                .expect("open"),
        );
        std::hint::black_box(keys.open_json(org, customer, sealed[2].as_deref()).expect("open"));
    }
    let read = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let stored: usize = sealed.iter().flatten().map(Vec::len).sum();
    let plain = name.len() + email.len() + attributes.to_string().len();
    println!(
        "{n} customers: write (3 seals + blind index) {write:.2} µs, read (3 opens) {read:.2} µs per customer; \
         {stored} bytes stored for {plain} bytes of text"
    );
}
