# sixpn node, Nomad system job with the raw_exec driver (issue 18): on every client, sixpn-node
# (deploy/node/sixpn-node.sh) runs on the host itself, with no container, and joins the host to
# the sixpn network as a peer of group `web`. Services on the host that listen on all IPv6
# addresses ([::]) answer on its tunnel address; HAProxy on the gateway finds them by resolving
# `web._g.internal` (deploy/haproxy/haproxy.cfg). The docker job (sixpn-node.nomad.hcl) is the
# choice where a container per allocation is wanted; this one suits hosts whose own services
# (Nomad's or not) should be on the network.
#
# The peer is named after the client: `${node.unique.name}` (Nomad's node attribute, often a
# host name with dots, `worker-1.dc1`), which sixpn-node makes a DNS label (`worker-1-dc1`). It
# narrows the token to that name offline (`sixpn token attenuate --name`), so a host can re-key
# or delete only its own peer. On stop (SIGTERM from Nomad) it deletes its peer and stops
# wireguard-go, which removes the interface; the poststop task deletes the peer once more in
# case the tunnel task died first.
#
# On each client, as root:
#   - enable the driver in the client's configuration:
#       plugin "raw_exec" { config { enabled = true } }
#     raw_exec runs tasks as the Nomad client's user (root), unisolated: only jobs you trust
#     should be allowed to use it (Nomad ACLs: the `submit-job` capability of this namespace).
#   - install the node tools where PATH below finds them:
#       install -m 0755 target/release/sixpn /usr/local/bin/sixpn
#       install -m 0755 deploy/node/sixpn-node.sh /usr/local/bin/sixpn-node
#       install -m 0755 deploy/node/sixpn-wg-up.sh /usr/local/bin/sixpn-wg-up
#       apt-get install wireguard-go wireguard-tools iproute2 curl
#
# The token comes from a Nomad variable readable by this job only:
#   sixpn token create --name nomad-hosts --group web --max-peers 500  # prints SIXPN_WIREGUARD_TOKEN=...
#   nomad var put nomad/jobs/sixpn-node-host token=sixpn_wg_...

job "sixpn-node-host" {
  type = "system"

  group "host" {
    task "tunnel" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        # exec: sixpn-node gets Nomad's SIGTERM itself, to delete its peer.
        args = ["-c", "exec sixpn-node \"$PEER_NAME\" web \"\""]
      }

      # sixpn-node deletes its peer on SIGTERM (give it the time) and cleans up after itself.
      kill_signal  = "SIGTERM"
      kill_timeout = "15s"

      # The token, from the job's variable; rendered into the secrets dir, exported as env.
      template {
        destination = "$${NOMAD_SECRETS_DIR}/sixpn.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/sixpn-node-host" }}SIXPN_WIREGUARD_TOKEN={{ .token }}{{ end }}
        EOT
      }

      env {
        PATH          = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        SIXPN_API_URL = "https://sixpn.example.net:4280"
        # With a private CA on the API: a file on the host, e.g.
        # SIXPN_CA_CERT = "/etc/sixpn/ca.pem"
        # One peer per client node; sixpn-node makes it a DNS label.
        PEER_NAME = "${node.unique.name}"
        # The config (with the private key) in the task's secrets dir (0700, the task's own).
        SIXPN_CONF_DIR = "$${NOMAD_SECRETS_DIR}/sixpn"
        # The host's interface, and where wireguard-go puts its socket on the host.
        SIXPN_IFACE      = "sixpn0"
        SIXPN_WG_RUN_DIR = "/var/run/wireguard"
        SIXPN_MTU        = "1420"
        # wireguard-go refuses to run where the kernel module exists unless told so.
        WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD = "1"
      }

      resources {
        cpu    = 50
        memory = 64
      }
    }

    task "deregister" {
      driver = "raw_exec"
      lifecycle {
        hook = "poststop"
      }
      config {
        command = "/bin/sh"
        args    = ["-c", "exec sixpn-node --deregister \"$PEER_NAME\""]
      }
      template {
        destination = "$${NOMAD_SECRETS_DIR}/sixpn.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/sixpn-node-host" }}SIXPN_WIREGUARD_TOKEN={{ .token }}{{ end }}
        EOT
      }
      env {
        PATH          = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        SIXPN_API_URL = "https://sixpn.example.net:4280"
        # SIXPN_CA_CERT = "/etc/sixpn/ca.pem"
        PEER_NAME = "${node.unique.name}"
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }
  }
}
