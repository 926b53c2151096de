"""Offline validation of the Heat templates with OpenStack Heat's own engine.

Runs the engine's parser and validator (template version, sections, intrinsic functions,
resource types, property schemas, references, parameter constraints) without a cloud:
the checks that would ask a cloud whether a flavor, image, network or service exists are
switched off. Also evaluates the yaql expression that builds the founding member list and
renders one instance's cloud-config exactly as Heat would, for `cloud-init schema`.

    python validate_hot.py RENDERED_CLOUD_CONFIG_PATH
    python validate_hot.py --node-envs COUNT IP_PREFIX OUT_DIR
"""

import os
import sys

from oslo_config import cfg

cfg.CONF([], project="heat", default_config_files=[])

from heat.common import context, template_format  # noqa: E402
from heat.engine import constraints, environment, resource, resources, stack, template  # noqa: E402
from heat.engine.resources.openstack.nova import server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = [
    "laundry-node.yaml",
    "node.env",
    "laundry-node.service",
    "laundry-backup.service",
    "laundry-backup.timer",
    "laundry-volume-snapshot",
]

# Offline: nothing may ask a cloud.
constraints.CustomConstraint.validate = lambda self, value, schema=None, context=None, template=None: None
resource.Resource._validate_service_availability = lambda *a, **k: None
server.Server._validate_image_flavor = lambda *a, **k: None
# API microversions a property needs: assume a current cloud rather than ask one.
from heat.engine.clients import microversion_mixin  # noqa: E402
from heat.engine.clients.os import nova  # noqa: E402

for plugin in (microversion_mixin.MicroversionMixin, nova.NovaClientPlugin):
    plugin.is_version_supported = lambda self, version: True
# A resource group asks the engine (RPC) which existing members removal policies skip.
from heat.engine.resources.openstack.heat import resource_group  # noqa: E402

resource_group.ResourceGroup._name_skiplist = lambda self: set()
resources.initialise()

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
COMMON = {
    "admin_token": "an-admin-token-of-length-32-xxxx",
    "tls_ca": PEM,
    "tls_cert": PEM,
    "tls_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    "release_url": "https://artifacts.example.internal/laundry-list-0.1.0-x86_64.tar.gz",
    "release_sha256": "0" * 64,
}


def read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def files():
    return {name: read(name) for name in FILES}


def make_stack(name, params):
    tmpl = template.Template(
        template_format.parse(read(name)),
        files=files(),
        env=environment.Environment({"parameters": params}),
    )
    ctx = context.RequestContext(user_id="validator", project_id="validator", is_admin=True)
    return stack.Stack(ctx, "validate", tmpl)


def validate_top_level():
    params = dict(COMMON, key_name="ops", external_network="public")
    s = make_stack("laundry-list.yaml", params)
    s.validate()
    # A parameter outside its constraints must be refused (the validator can fail).
    bad = make_stack("laundry-list.yaml", dict(params, node_count=4))
    try:
        bad.validate()
    except Exception as e:  # the engine's StackValidationFailed
        assert "node_count" in str(e), e
    else:
        raise AssertionError("node_count=4 was accepted")
    print("laundry-list.yaml: valid")


def check_members_expression():
    """Heat's own yaql evaluation of the founding member list, for 3 and 5 instances."""
    base = dict(COMMON, key_name="ops", external_network="public")
    expected3 = (
        "1=10.42.0.10:7501/10.42.0.10:7401/10.42.0.10:7601,"
        "2=10.42.0.11:7501/10.42.0.11:7401/10.42.0.11:7601,"
        "3=10.42.0.12:7501/10.42.0.12:7401/10.42.0.12:7601"
    )
    for count in (3, 5):
        s = make_stack("laundry-list.yaml", dict(base, node_count=count))
        got = s["initial_members"].properties["value"]
        members = got.split(",")
        assert len(members) == count, got
        assert [m.split("=")[0] for m in members] == [str(i + 1) for i in range(count)], got
        if count == 3:
            assert got == expected3, got
    print("initial_members expression: ok")


def members_for(count, prefix):
    """The founding member list Heat computes for `count` instances at `prefix`."""
    base = dict(COMMON, key_name="ops", external_network="public")
    s = make_stack("laundry-list.yaml", dict(base, node_count=count, node_ip_prefix=prefix))
    return s["initial_members"].properties["value"]


def instance_cloud_config(index, prefix="10.42.0.1", members=None):
    """Validates laundry-node.yaml for one instance and returns its cloud-config as Heat
    renders it (a dict)."""
    params = dict(
        COMMON,
        index=index,
        name_prefix="laundry-list",
        flavor="m1.large",
        image="debian-12",
        key_name="ops",
        network="net",
        subnet="subnet",
        ip_prefix=prefix,
        security_groups="sg",
        server_group="group",
        volume_size=100,
        volume_type="ssd",
        initial_members=members or "1=10.42.0.10:7501/10.42.0.10:7401/10.42.0.10:7601",
        cluster_name="laundry-list",
        nas_export="nas.example.internal:/exports/laundry-list",
        clouds_yaml="",
        snapshot_retain=24,
    )
    s = make_stack("laundry-node.yaml", params)
    s.validate()
    return s["cloud_config"].properties["cloud_config"]


def written_file(cloud_config, path):
    return next(f for f in cloud_config["write_files"] if f["path"] == path)["content"]


def render_cloud_config(out_path):
    rendered = instance_cloud_config(1)
    print("laundry-node.yaml: valid")
    import yaml

    text = "#cloud-config\n" + yaml.safe_dump(rendered, sort_keys=False)
    env = written_file(rendered, "/etc/laundry/node.env")
    assert "%" not in env, f"unfilled placeholder in node.env:\n{env}"
    for line in (
        "LAUNDRY_ID_FROM_ORDINAL=laundry-list-1",
        "LAUNDRY_CLIENT_ADDR=10.42.0.11:7401",
        "LAUNDRY_PEER_ADDR=10.42.0.11:7501",
        "LAUNDRY_ADMIN_ENDPOINTS=10.42.0.11:7601",
    ):
        assert f"\n{line}\n" in env, f"{line} missing from node.env:\n{env}"
    volume = next(f for f in rendered["write_files"] if f["path"] == "/etc/laundry/volume.env")
    assert volume["content"].startswith("DATA_VOLUME_ID="), volume
    with open(out_path, "w") as f:
        f.write(text)
    print(f"cloud-config rendered to {out_path}")


def print_node_envs(count, prefix, out_dir):
    """Writes instance i's /etc/laundry/node.env to OUT_DIR/node-i.env, as Heat renders it
    for a stack of `count` instances at `prefix` (for deploy/test/systemd-env.py)."""
    members = members_for(count, prefix)
    for i in range(count):
        env = written_file(instance_cloud_config(i, prefix, members), "/etc/laundry/node.env")
        with open(os.path.join(out_dir, f"node-{i}.env"), "w") as f:
            f.write(env)
    print(f"{count} node.env files in {out_dir}")


if __name__ == "__main__":
    if sys.argv[1] == "--node-envs":
        print_node_envs(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        sys.exit(0)
    validate_top_level()
    check_members_expression()
    render_cloud_config(sys.argv[1])
