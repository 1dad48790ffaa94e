# sixpn node, Nomad system job: on every client, a group that joins the sixpn network as a peer
# of group `web` and serves an app on its tunnel address. HAProxy on the gateway finds them by
# resolving `web._g.internal` (deploy/haproxy/haproxy.cfg). Same steps as tests/e2e/run.sh:
#   sixpn token start NAME web REGION FILE --no-dns   →   wireguard-go   →   sixpn-wg-up
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
        args    = ["-c", <<-EOT
          set -eu
          iface=sixpn0
          conf=$${NOMAD_SECRETS_DIR}/$iface.conf
          rm -f "$conf"
          if ! sixpn token start "$PEER_NAME" web "" "$conf" --no-dns; then
            sixpn token update "$PEER_NAME" "$conf"
          fi
          wireguard-go -f "$iface" &
          wg_pid=$!
          trap 'kill "$wg_pid"' TERM INT
          i=0
          until [ -S "/var/run/wireguard/$iface.sock" ]; do
            i=$((i + 1)); [ "$i" -lt 100 ] || { echo "wireguard-go did not start" >&2; exit 1; }
            sleep 0.1
          done
          sixpn-wg-up "$iface" "$conf" 1420
          wait "$wg_pid"
        EOT
        ]
      }

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
        # One peer per client node; a DNS label.
        PEER_NAME = "${node.unique.name}"
      }

      # On stop, delete the peer so it leaves DNS (and HAProxy) at once.
      kill_timeout = "15s"

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
        args = ["-c", <<-EOT
          curl -fsS -m 10 -X DELETE -H "Authorization: Bearer $SIXPN_WIREGUARD_TOKEN" \
            "$SIXPN_API_URL/api/v3/wire_guard_peers/$PEER_NAME" || true
        EOT
        ]
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
        PEER_NAME     = "${node.unique.name}"
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
