"""Fair under load, through the API as many visitors at once would use it: a burst larger than the queue gets
clear refusals for the excess, and the accepted runs complete."""

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


def test_admissions_count_waiting_runs_start_in_order_and_expire():
    from l2p.demo.admission import Admissions
    from l2p.demo.errors import DemoError

    now = [0.0]
    admissions = Admissions(max_waiting=2, clock=lambda: now[0])
    first, second = admissions.admit(10.0), admissions.admit(20.0)
    with pytest.raises(DemoError, match=r"2 runs are waiting and 0 running .* Try again in about 30"):
        admissions.admit(5.0)
    assert admissions.start() is first and admissions.waiting == 1
    third = admissions.admit(5.0)  # one started, so there is room again
    admissions.finish(first)
    assert admissions.start() is second and admissions.start() is third and admissions.start() is None
    admissions.finish(second)
    admissions.finish(third)
    admissions.admit(1.0)
    admissions.admit(1.0)  # two that never start (their visitors left)
    now[0] = 1000.0
    admissions.admit(1.0)  # they have expired
    assert admissions.waiting == 1
