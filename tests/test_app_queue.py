"""Fair under load, through the API as many visitors at once would use it: a burst larger than the queue gets
clear refusals for the excess, and the accepted runs complete."""

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client

from browser.server import save_tiny_models, serve_app

QUEUE = 3


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    work = tmp_path_factory.mktemp("queue")
    assets = save_tiny_models(work / "assets")
    with serve_app(work, L2P_ASSETS=str(assets), L2P_MAX_QUEUE=str(QUEUE), L2P_CONCURRENCY="1",
                   L2P_MAX_SECONDS="0") as url:
        yield Client(url, verbose=False)


def test_a_burst_of_ten_with_a_queue_of_three_refuses_the_excess(client):
    def one(index):
        job = client.submit(prompt="a red circle", steps=30, seed=index, randomize_seed=False, api_name="/generate")
        try:
            return "done", job.result(timeout=240)[1]
        except Exception as error:  # noqa: BLE001 - what a client sees is the point
            return "refused", f"{type(error).__name__}: {error!r}"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(one, range(10)))
    refused = [message for status, message in outcomes if status == "refused"]
    done = [seed for status, seed in outcomes if status == "done"]
    assert len(refused) >= 6, outcomes
    assert all("The queue is full" in message and "L2P_MAX_QUEUE=3" in message for message in refused), refused
    assert done and sorted(done) == sorted(set(done))  # every accepted run finished, with its own seed


def test_waiting_visitors_see_the_runs_ahead_and_the_apps_own_estimate(client):
    """Runs wait in the app's own queue, and each waiting one is told what is ahead of it, from this app's
    estimates (not Gradio's average over past events)."""
    # The first run must still be going when the other two arrive: 100 steps (the most) is ~3 s even on a CPU with
    # bf16 units, where 40 steps were over before the third run came (seen: its "Waiting" line never appeared).
    jobs = [client.submit(prompt="a red circle", steps=100, seed=1, randomize_seed=False, api_name="/generate")]
    deadline = time.monotonic() + 60
    while jobs[0].status().code.name != "ITERATING" and time.monotonic() < deadline:
        time.sleep(0.1)
    for seed in (2, 3):
        jobs.append(client.submit(prompt="a blue square", steps=2, seed=seed, randomize_seed=False, api_name="/generate"))
        time.sleep(0.25)  # in this order
    finished = [job.result(timeout=240) for job in jobs]
    lines = [[output[2] for output in job.outputs()] for job in jobs]
    waits = [[line for line in job_lines if line.startswith("Waiting")] for job_lines in lines]
    assert waits[0] == []  # nothing ahead of the first
    pattern = re.compile(r"Waiting: (\d) runs? ahead of you, about ([\d.]+) (ms|s) until yours starts\.")
    ahead = [[pattern.fullmatch(line) for line in job_waits] for job_waits in waits[1:]]
    assert all(ahead) and all(all(match for match in job) for job in ahead), waits
    assert ahead[0][0].group(1) == "1" and ahead[1][0].group(1) == "2"
    # The time ahead counts down as the run ahead proceeds, and never exceeds that run's own estimate.
    estimate = re.search(r"estimated ([\d.]+) (ms|s)\)", finished[0][2])
    first_estimate = float(estimate.group(1)) / (1000 if estimate.group(2) == "ms" else 1)
    seconds = [float(m.group(2)) / (1000 if m.group(3) == "ms" else 1) for m in ahead[0]]
    assert seconds == sorted(seconds, reverse=True) and seconds[0] <= first_estimate + 0.05
    assert [result[1] for result in finished] == [1, 2, 3]


def test_admissions_count_waiting_runs_give_turns_in_order_and_expire():
    from l2p.demo.admission import Admissions
    from l2p.demo.errors import DemoError

    now = [0.0]
    admissions = Admissions(max_waiting=2, clock=lambda: now[0])
    admissions.admit(10.0)
    admissions.admit(20.0)
    with pytest.raises(DemoError, match=r"2 runs are waiting and 0 running .* Try again in about 30"):
        admissions.admit(5.0)
    first, second = admissions.join(10.0), admissions.join(20.0)  # their runs arrive, in order
    assert not admissions.turn(second, timeout=0) and admissions.turn(first, timeout=0)
    assert admissions.waiting == 1
    third = admissions.join(5.0)  # one started, so there is room again (a run that was never admitted joins too)
    now[0] = 4.0  # the first has run 4 of its 10 estimated seconds
    waiting = admissions.ahead(third)
    assert (waiting.ahead, waiting.seconds, waiting.unknown) == (2, 6.0 + 20.0, 0)
    assert not admissions.turn(second, timeout=0.01)  # one at a time
    admissions.finish(first)
    assert not admissions.turn(third, timeout=0) and admissions.turn(second, timeout=0)
    admissions.finish(second)
    assert admissions.turn(third, timeout=0)
    admissions.finish(third)
    admissions.admit(1.0)
    admissions.admit(1.0)  # two that no run claims (their visitors left)
    now[0] = 1000.0
    admissions.admit(1.0)  # they have expired
    assert admissions.waiting == 1
    unknown = Admissions(max_waiting=5)
    running, waiting = unknown.join(None), unknown.join(3.0)
    assert unknown.turn(running, timeout=0)
    assert (unknown.ahead(waiting).ahead, unknown.ahead(waiting).seconds, unknown.ahead(waiting).unknown) == (1, None, 1)
