//! Checks a policy file and answers a question about it, with the explanation a hub would log.
//!
//! ```text
//! cargo run -p acls-and-groups --example check_policy -- POLICY.json
//! cargo run -p acls-and-groups --example check_policy -- POLICY.json PRINCIPAL ACTION DB [VIEW]
//! ```
//!
//! POLICY.json is a whole policy (`{"type": "policy", "v": 1, "documents": [...]}`). PRINCIPAL
//! is `key:<key id>`, `anonymous` or `owner`; ACTION is `read`, `write`, `admin` or
//! `create-view`. Prints the policy's warnings (cycles, undefined groups), then the decision.

use std::error::Error;
use std::process::ExitCode;

use acls_and_groups::{Action, KeyId, Policy, Principal, Resource};

const USAGE: &str = "usage: check_policy POLICY.json [PRINCIPAL ACTION DB [VIEW]]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Exit status: 0 allowed (or no question), 1 denied, 2 the file or the arguments are wrong.
fn run() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err(USAGE.into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    // The owner is each device's own key and is not in the file; this one is a stand-in.
    let policy = Policy::from_json(KeyId::from_digest([0; 32]), &text)?;
    println!(
        "{path}: {} groups, {} ACLs",
        policy.groups().len(),
        policy.acls().len()
    );
    for warning in policy.warnings() {
        println!("warning: {warning}");
    }
    let [_, principal, action, db, rest @ ..] = args.as_slice() else {
        return Ok(ExitCode::SUCCESS);
    };
    let principal = match principal.as_str() {
        "anonymous" => Principal::Anonymous,
        "owner" => Principal::Owner,
        other => match other.strip_prefix("key:") {
            Some(key) => Principal::Key(key.parse()?),
            None => return Err(format!("unknown principal {other:?}\n{USAGE}").into()),
        },
    };
    let action = match action.as_str() {
        "read" => Action::Read,
        "write" => Action::Write,
        "admin" => Action::Admin,
        "create-view" => Action::CreateView,
        other => return Err(format!("unknown action {other:?}\n{USAGE}").into()),
    };
    let resource = match rest {
        [] => Resource::Database(db),
        [view] => Resource::View { db, view },
        _ => return Err(USAGE.into()),
    };
    let decision = policy.may(principal, action, resource);
    println!("{decision}");
    Ok(if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
