from datetime import timedelta
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import PROJECT_ROOT
from core.temporal import policies
from core.topology import Topology, load_topology
from workers.registry import BINDINGS, QueueBinding, check_topology

MINIMAL = """
task_queues:
  platform: {}
activities:
  default:
    start_to_close_timeout: 30s
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "temporal.yaml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_topology(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_shipped_topology_is_valid_and_fully_registered() -> None:
    topology = load_topology(PROJECT_ROOT / "temporal.yaml")
    check_topology(topology)
    assert set(topology.task_queues) == set(BINDINGS)
    assert topology.schedules["selfcheck"].interval == timedelta(minutes=15)


def test_minimal_topology_gets_defaults(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, MINIMAL))
    assert topology.namespace == "default"
    assert topology.task_queues["platform"].max_concurrent_activities == 100
    policy = topology.activity("default").retry.to_temporal()
    assert policy.maximum_attempts == 0 and policy.backoff_coefficient == 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "colour: blue\n", "colour: unknown key"),
        (
            MINIMAL.replace("platform: {}", "platform: {max_concurent_activities: 5}"),
            "task_queues.platform.max_concurent_activities: unknown key",
        ),
        (
            MINIMAL.replace("platform: {}", "platform: {max_concurrent_activities: 0}"),
            "task_queues.platform.max_concurrent_activities: Input should be greater than 0",
        ),
        (
            MINIMAL.replace("30s", "thirty"),
            "activities.default.start_to_close_timeout: 'thirty' is not a duration",
        ),
        (MINIMAL.replace("default:", "db:"), "activities must define a 'default' kind"),
        (
            "task_queues: {}\nactivities: {}\n",
            "task_queues: Dictionary should have at least 1 item",
        ),
        ("activities: {}\n", "task_queues: required key is missing"),
        ("task_queues: [\n", "line 2"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        (
            MINIMAL
            + "schedules:\n  nightly: {workflow: X, task_queue: nowhere, cron: '0 2 * * *'}\n",
            "schedules.nightly.task_queue: 'nowhere' is not a declared task queue",
        ),
        (
            MINIMAL + "schedules:\n  nightly: {workflow: X, task_queue: platform}\n",
            "give exactly one of cron or interval",
        ),
        (
            MINIMAL + "schedules:\n  nightly: {workflow: X, task_queue: platform, cron: '0 2 *'}\n",
            "must have five fields",
        ),
    ],
)
def test_bad_topology_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_for(tmp_path, text)
    assert expected in message
    assert message.startswith(str(tmp_path / "temporal.yaml"))


def test_registry_rejects_unserved_queue_and_unknown_scheduled_workflow(tmp_path: Path) -> None:
    topology = load_topology(
        write(tmp_path, MINIMAL.replace("platform: {}", "platform: {}\n  extra: {}"))
    )
    with pytest.raises(ConfigError, match="task queue 'extra' in temporal.yaml has no workflows"):
        check_topology(topology)
    schedule = "schedules:\n  nightly: {workflow: NoSuch, task_queue: platform, interval: 1h}\n"
    scheduled = load_topology(write(tmp_path, MINIMAL + schedule))
    with pytest.raises(ConfigError, match="'NoSuch' is not a workflow of task queue"):
        check_topology(scheduled, {"platform": QueueBinding()})


def test_activity_options_come_from_the_installed_topology(tmp_path: Path) -> None:
    topology = Topology.model_validate(
        {
            "task_queues": {"platform": {}},
            "activities": {
                "default": {"start_to_close_timeout": "1m"},
                "git": {
                    "start_to_close_timeout": "10m",
                    "heartbeat_timeout": "30s",
                    "retry": {
                        "initial_interval": "2s",
                        "maximum_interval": "1m",
                        "maximum_attempts": 5,
                    },
                },
            },
        }
    )
    policies.install(topology)
    options = policies.activity_options("git")
    assert options["start_to_close_timeout"] == timedelta(minutes=10)
    assert options["heartbeat_timeout"] == timedelta(seconds=30)
    assert options["retry_policy"].maximum_attempts == 5
    assert options["retry_policy"].initial_interval == timedelta(seconds=2)
    assert "schedule_to_close_timeout" not in options
    with pytest.raises(KeyError, match="activity kind 'nope' is not in temporal.yaml"):
        policies.activity_options("nope")
