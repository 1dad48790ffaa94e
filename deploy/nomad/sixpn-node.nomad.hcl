# sixpn node, Nomad system job: on every client, a group that joins the sixpn network as a peer
# of group `web` and serves an app on its tunnel address. HAProxy on the gateway finds them by
# resolving `web._g.internal` (deploy/haproxy/haproxy.cfg).
#
# The `tunnel` task runs sixpn-node (deploy/node/sixpn-node.sh), as the Kubernetes DaemonSet does:
# the client's name made a DNS label (Nomad names often hold dots: `worker-1.dc1` →
# `worker-1-dc1`), `sixpn token ensure` (register, or re-key when the name exists), wireguard-go
# and sixpn-wg-up, then `sixpn token ensure` every 30 s, so a peer an admin deleted is
# registered again and a tunnel with no handshake for 5 minutes is re-keyed. On SIGTERM it
# deletes its peer; the poststop task does it once more in case the tunnel task died first.
#
# sixpn-node narrows the job's token at start, offline, to the client's own name (`sixpn token
# attenuate --name`): an allocation can re-key or delete only its own peer (deploy/README.md,
# "Fleet tokens").
#
# The token comes from a Nomad variable readable by this job only:
#   sixpn token create --name nomad-web --group web             # prints SIXPN_WIREGUARD_TOKEN=...
#   nomad var put nomad/jobs/sixpn-web token=sixpn_wg_...
#
# Needs the docker driver with NET_ADMIN allowed (plugin "docker" { config { allow_caps =
# ["net_admin", ...defaults] } }).

job "sixpn-web" {
  type = "system"

  group "web" {
    # Tasks of the group share one network namespace: the app binds the tunnel address.
    network {
      mode = "bridge"
    }

    task "tunnel" {
      driver = "docker"

      config {
        image   = "ghcr.io/sixpn/sixpn-node:latest"
        cap_add = ["net_admin"]
        devices = [{ host_path = "/dev/net/tun", container_path = "/dev/net/tun" }]
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
          {{ with nomadVar "nomad/jobs/sixpn-web" }}SIXPN_WIREGUARD_TOKEN={{ .token }}{{ end }}
        EOT
      }

      env {
        SIXPN_API_URL = "https://sixpn.example.net:4280"
        # With a private CA on the API: a file in the image or a template, e.g.
        # SIXPN_CA_CERT = "$${NOMAD_SECRETS_DIR}/ca.pem"
        # One peer per client node; sixpn-node makes it a DNS label.
        PEER_NAME = "${node.unique.name}"
        # The config (with the private key) lives in the task's in-memory secrets dir.
        SIXPN_CONF_DIR = "$${NOMAD_SECRETS_DIR}/sixpn"
        SIXPN_MTU      = "1420"
      }

      resources {
        cpu    = 50
        memory = 64
      }
    }

    task "deregister" {
      driver = "docker"
      lifecycle {
        hook = "poststop"
      }
      config {
        image   = "ghcr.io/sixpn/sixpn-node:latest"
        command = "/bin/sh"
        args    = ["-c", "exec sixpn-node --deregister \"$PEER_NAME\""]
      }
      template {
        destination = "$${NOMAD_SECRETS_DIR}/sixpn.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/sixpn-web" }}SIXPN_WIREGUARD_TOKEN={{ .token }}{{ end }}
        EOT
      }
      env {
        SIXPN_API_URL = "https://sixpn.example.net:4280"
        # With a private CA on the API, as in the tunnel task:
        # SIXPN_CA_CERT = "$${NOMAD_SECRETS_DIR}/ca.pem"
        PEER_NAME = "${node.unique.name}"
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }

    # The app: anything on [::]:8080 answers on the tunnel address.
    task "web" {
      driver = "docker"
      config {
        image   = "python:3.12-alpine"
        command = "python3"
        args    = ["-m", "http.server", "8080", "--bind", "::"]
      }
      resources {
        cpu    = 50
        memory = 64
      }
    }
  }
}
