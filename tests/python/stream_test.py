"""The Python `kubernetes` client's streaming calls against a running mk8s cluster: exec
(WebSocket `v4.channel.k8s.io`, the only protocol this client offers) with stdout, stderr,
stdin and a non-zero exit code, and port-forward (WebSocket, ports in the query), on the pod
`web` in `default` (busybox httpd serving `hello-web` on 8080).

Usage: stream_test.py KUBECONFIG
Prints `ok` and exits 0 when every step worked; any exception fails the run.
"""
import sys
import time

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def main():
    cfg = client.Configuration()
    config.load_kube_config(config_file=sys.argv[1], client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))

    # stdout and stderr are separate channels (their relative order is not kept).
    resp = stream(core.connect_get_namespaced_pod_exec, "web", "default",
                  command=["sh", "-c", "echo hi; echo oops >&2"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=30)
    out, err = resp.read_stdout(), resp.read_stderr()
    assert (out, err, resp.returncode) == ("hi\n", "oops\n", 0), (out, err, resp.returncode)

    # The exit status arrives on the error channel as a Status with the ExitCode cause.
    resp = stream(core.connect_get_namespaced_pod_exec, "web", "default",
                  command=["sh", "-c", "exit 3"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=30)
    assert resp.returncode == 3, resp.returncode

    resp = stream(core.connect_get_namespaced_pod_exec, "web", "default", command=["cat"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("input\n")
    got = ""
    deadline = time.time() + 30
    while "input\n" not in got and time.time() < deadline and resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            got += resp.read_stdout()
    resp.close()
    assert got == "input\n", repr(got)

    pf = portforward(core.connect_get_namespaced_pod_portforward, "web", "default",
                     ports="8080")
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.settimeout(30)
    sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.split(b"\r\n\r\n", 1)[-1] == b"hello-web\n", data
    print("ok")


if __name__ == "__main__":
    main()
