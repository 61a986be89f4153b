//! Finding or creating the kind cluster, the way upstream's
//! `hack/create-kind-cluster.sh` does (registry, config, proxy ARP, node
//! registry hosts, the local-registry-hosting ConfigMap); see
//! `docs/upstream.md`.

use anyhow::{bail, Result};
use tracing::{info, warn};

use super::KindBackend;

impl KindBackend {
    pub(super) async fn ensure_cluster(&self) -> Result<()> {
        let name = &self.opts.cluster;
        let listed = self
            .run(
                &format!("is there a kind cluster named {name}?"),
                self.tools.kind_get_clusters(),
                &if self.opts.create_cluster {
                    String::new()
                } else {
                    format!("{name}\n")
                },
            )
            .await?;
        let clusters: Vec<&str> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if clusters.contains(&name.as_str()) {
            if !self.opts.dry_run {
                info!(cluster = %name, "reusing the kind cluster");
            }
            return Ok(());
        }
        if !self.opts.create_cluster {
            bail!(
                "there is no kind cluster named {name:?} (kind get clusters: {}); run Agent Substrate's kind install first, or pass --create-cluster to create an empty one",
                if clusters.is_empty() { "none".to_owned() } else { clusters.join(", ") }
            );
        }
        let inspected = self
            .run(
                "is the local registry container kind-registry running?",
                self.tools.registry_inspect(),
                "",
            )
            .await;
        match inspected.as_deref().map(str::trim) {
            Ok("true") => {}
            // There, but stopped: someone else's; started, never removed.
            // (A dry run plans the other case: it knows of no container.)
            Ok(_) if !self.opts.dry_run => {
                self.run(
                    "start the stopped local registry kind-registry",
                    self.tools.registry_start(),
                    "",
                )
                .await?;
            }
            // Not there: this run makes it. Marked before it runs, so an
            // interrupt or failure midway still removes it.
            _ => {
                self.update(|st| st.created_registry = true);
                self.run(
                    "start the local registry kind-registry on 127.0.0.1:5001",
                    self.tools.registry_run(),
                    "",
                )
                .await?;
            }
        }
        let config = self.opts.fixtures_dir.join("kind/cluster.yaml");
        // Marked before it runs, for the same reason (`kind delete cluster`
        // of a missing cluster succeeds).
        self.update(|st| st.created_cluster = true);
        self.run(
            &format!("create the kind cluster {name} (this run deletes it at the end)"),
            self.tools.kind_create_cluster(name, &config),
            "",
        )
        .await?;
        if let Err(e) = self
            .run(
                "connect kind-registry to the kind network",
                self.tools.registry_connect(),
                "",
            )
            .await
        {
            // Already connected is fine; anything else shows up when nodes
            // cannot pull.
            warn!("{e:#}");
        }
        let nodes = self
            .run(
                "list the cluster's nodes",
                self.tools.kind_get_nodes(name),
                &format!("{name}-control-plane\n"),
            )
            .await?;
        for node in nodes.lines().map(str::trim).filter(|n| !n.is_empty()) {
            self.run(
                &format!("make the registry config directory on node {node}"),
                self.tools.node_registry_dir(node),
                "",
            )
            .await?;
            self.run(
                &format!("point node {node} at kind-registry:5000 for localhost:5001"),
                self.tools.node_registry_hosts(node),
                "",
            )
            .await?;
            self.run(
                &format!("enable proxy ARP on node {node} (gVisor loopback pod-to-pod networking)"),
                self.tools.node_proxy_arp(node),
                "",
            )
            .await?;
        }
        self.run(
            "document the local registry (ConfigMap kube-public/local-registry-hosting)",
            self.tools.registry_hosting_configmap(),
            "",
        )
        .await?;
        Ok(())
    }
}
