# pyinfra inventory for the benchmark: hosts 1..$BENCH_N on 127.0.0.1:$BENCH_BASE+K.
import os

_dir = os.environ["BENCH_DIR"]
_n = int(os.environ["BENCH_N"])
_base = int(os.environ["BENCH_BASE"])
fleet = [
    (f"host{k}", {
        "ssh_hostname": "127.0.0.1", "ssh_port": _base + k, "ssh_user": "root",
        "ssh_key": f"{_dir}/id_ed25519", "ssh_known_hosts_file": f"{_dir}/known_hosts",
        "ssh_allow_agent": False, "ssh_look_for_keys": False,
        "role": "worker", "ollama_port": 11434,
    })
    for k in range(1, _n + 1)
]
