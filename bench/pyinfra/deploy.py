# The benchmark workload for pyinfra: the same ten steps as the fleet playbook and the
# Ansible playbook in bench/.
import os

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.facts.hardware import Cpus, Memory
from pyinfra.operations import files, server

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "..", "workload")

server.user(name="Ensure service user", user="fleet", system=True, shell="/usr/sbin/nologin", ensure_home=False)
for path, owner, mode in [("/opt/fleet", "root", "755"), ("/opt/fleet/bin", "root", "755"), ("/etc/fleet", "root", "750"), ("/var/lib/fleet", "fleet", "750")]:
    files.directory(name=f"Ensure {path}", path=path, user=owner, mode=mode)
files.template(name="Render node config", src=f"{HERE}/node.toml.j2", dest="/etc/fleet/node.toml", mode="640",
               node_name=host.name, role=host.data.role, ollama_port=host.data.ollama_port,
               fleet_version="0.1.0", cpus=host.get_fact(Cpus), mem_mb=host.get_fact(Memory))
files.put(name="Install health check", src=f"{WORK}/files/healthcheck.sh", dest="/opt/fleet/bin/healthcheck.sh", mode="755")
files.put(name="Install model list", src=f"{WORK}/files/models.txt", dest="/etc/fleet/models.txt", mode="644")
files.file(name="Set node config ownership and mode", path="/etc/fleet/node.toml", user="root", group="fleet", mode="640")
files.line(name="Point clients at ollama", path="/etc/environment", line="^OLLAMA_HOST=.*", replace=f"OLLAMA_HOST=127.0.0.1:{host.data.ollama_port}")
files.link(name="Link health check into PATH", path="/usr/local/bin/fleet-healthcheck", target="/opt/fleet/bin/healthcheck.sh")
if not host.get_fact(File, path="/var/lib/fleet/initialized"):
    server.shell(name="Initialize node state once", commands=["/opt/fleet/bin/healthcheck.sh --init > /var/lib/fleet/initialized"])
