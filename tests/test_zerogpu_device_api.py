"""The ZeroGPU device API stand-in (`zerogpu_local.device_api`), read by spaces' own API client.

Every answer is parsed by `spaces.zero.api.APIClient` (the code a Space runs), so these tests fail if the
stand-in drifts from what the pinned `spaces` version expects.
"""

from datetime import timedelta

import pytest

httpx = pytest.importorskip("httpx")
api_module = pytest.importorskip("spaces.zero.api")

from zerogpu_local.device_api import DeviceAPI, Policy  # noqa: E402


def client(api: DeviceAPI):
    return api_module.APIClient(httpx.Client(base_url=api.url, timeout=10))


def schedule(api: DeviceAPI, duration=42):
    return client(api).schedule(cgroup_path="/sys/fs/cgroup/test", task_id=7, token_version=2,
                                duration_seconds=duration)


def test_grant_in_json_then_allow_and_release_are_logged_in_order():
    with DeviceAPI() as api:
        assert client(api).startup_report() == httpx.codes.OK
        answer, _ = schedule(api, duration=150)
        assert isinstance(answer, api_module.ScheduleResponse)
        assert answer.idle is False and answer.nvidiaIndex == 0 and answer.allowToken
        assert client(api).allow(allow_token=answer.allowToken, pid=4242) == httpx.codes.OK
        assert client(api).release(allow_token=answer.allowToken) == httpx.codes.OK
        assert client(api).allow(allow_token="not-granted", pid=1) == httpx.codes.NOT_FOUND
        endpoints = [r.endpoint for r in api.requests()]
        assert endpoints == ["startup-report", "schedule", "allow", "release", "allow"]
        (call,) = api.calls()
        assert call["duration"] == 150 and call["pids"] == [4242] and call["released"] and not call["failed"]
        assert 0 <= call["seconds"] < 5


def test_grant_as_an_event_stream_is_parsed_by_spaces():
    with DeviceAPI(Policy(stream=True, idle=True)) as api:
        answer, _ = schedule(api)
        events = list(answer)  # spaces' sse_stream: ping, then succeeded with the grant
        assert [e.event for e in events] == ["ping", "succeeded"]
        assert events[-1].data.idle is True and events[-1].data.allowToken == api.calls()[0]["token"]


def test_refusals_no_gpu_quota_and_queue_timeout():
    with DeviceAPI() as api:
        api.answer_next("no-gpu", "quota")
        assert schedule(api)[0] == httpx.codes.SERVICE_UNAVAILABLE
        quota, _ = schedule(api)
        assert isinstance(quota, api_module.QuotaInfos) and quota.wait == timedelta(hours=1) and quota.left == 0
        api.answer_next("queue-timeout")
        stream, _ = schedule(api)
        assert [e.event for e in stream] == ["ping", "failed"]
        granted, _ = schedule(api)  # one-off answers are used up: the policy grants again
        assert isinstance(granted, api_module.ScheduleResponse)
        assert [r.answer for r in api.requests("schedule")] == ["no-gpu", "quota", "queue-timeout", "grant"]
        assert len(api.calls()) == 1


def test_a_duration_over_the_limit_is_an_illegal_duration():
    with DeviceAPI(Policy(max_duration_s=120)) as api:
        refused, _ = schedule(api, duration=121)
        assert isinstance(refused, api_module.QuotaInfos) and refused.wait < timedelta(0)  # spaces: "illegal"
        assert isinstance(schedule(api, duration=120)[0], api_module.ScheduleResponse)


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="answer must be one of"):
        Policy(answer="maybe")
    with DeviceAPI() as api, pytest.raises(ValueError, match="answer must be one of"):
        api.answer_next("grant", "later")
