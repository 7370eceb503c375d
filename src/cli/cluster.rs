//! `tasq cluster status`: the nodes of the cluster a server belongs to.

use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::table::{human_ms, number, text, Table};
use super::{print_json, CliResult, ClientArgs};

/// `tasq cluster …`.
#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// The nodes (alive or not, last heartbeat, queues owned), as the server asked sees them.
    Status,
    /// Forgets a node that died and will not come back (killed, its machine lost), so it is
    /// no longer listed nor counted dead; a live node is refused (stop it with SIGTERM: it
    /// leaves at once).
    Forget {
        /// The node's name, as `tasq cluster status` lists it.
        node: String,
    },
}

/// Runs a `tasq cluster` subcommand.
pub fn run(args: &ClientArgs, cmd: ClusterCommand) -> CliResult {
    match cmd {
        ClusterCommand::Status => {
            let answer = args.client()?.get("/api/v1/cluster", Duration::ZERO)?;
            if args.json {
                print_json(&answer);
            } else {
                print!("{}", render_status(&answer));
            }
            Ok(())
        }
        ClusterCommand::Forget { node } => {
            let path = format!(
                "/api/v1/cluster/nodes/{}",
                crate::client::encode_query(&node)
            );
            let answer = args.client()?.delete(&path)?;
            if args.json {
                print_json(&answer);
            } else {
                println!("forgot node {node}");
            }
            Ok(())
        }
    }
}

/// The nodes as a table, this node marked; a line of its own outside cluster mode.
pub fn render_status(answer: &Value) -> String {
    if answer["enabled"] != Value::Bool(true) {
        return "This server is not in a cluster (cluster.enabled = false).\n".into();
    }
    let me = answer["node"].as_str().unwrap_or_default();
    let mut t = Table::new(&["NODE", "ADDRESS", "ALIVE", "LAST HEARTBEAT", "QUEUES OWNED"]);
    for n in answer["nodes"].as_array().cloned().unwrap_or_default() {
        let id = text(&n["node_id"]);
        let shown = if id == me { format!("{id} (this)") } else { id };
        t.row(vec![
            shown,
            text(&n["advertise"]),
            if n["alive"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
            format!(
                "{} ago",
                human_ms(n["last_heartbeat_ms_ago"].as_u64().unwrap_or(0))
            ),
            number(&n["queues_owned"]),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_render_as_a_table_with_this_node_marked() {
        let out = render_status(&json!({
            "enabled": true, "node": "n1", "live": ["n1"],
            "nodes": [
                {"node_id": "n1", "advertise": "http://a:1", "alive": true,
                 "last_heartbeat_ms_ago": 300, "queues_owned": 4},
                {"node_id": "n2", "advertise": "http://b:1", "alive": false,
                 "last_heartbeat_ms_ago": 12000, "queues_owned": 0},
            ]
        }));
        assert!(out.contains("n1 (this)"), "{out}");
        assert!(
            out.lines().any(|l| l.contains("n2") && l.contains("no")),
            "{out}"
        );
        assert!(render_status(&json!({"enabled": false, "nodes": []})).contains("not in a cluster"));
    }
}
