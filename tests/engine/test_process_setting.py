"""SharedSetting: overlapping holders apply a process-wide setting once, undo it once."""

import threading

from dnmf.engine.process_setting import SharedSetting


def test_overlapping_holders_apply_once_and_the_last_restores():
    setting, state, log = SharedSetting(), {"value": "original"}, []

    def apply():
        log.append("apply")
        state["value"] = "changed"
        return lambda: (log.append("undo"), state.update(value="original"))

    inside, release = threading.Barrier(3), threading.Event()

    def hold():
        with setting.held(apply):
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()  # both holders inside
    assert state["value"] == "changed" and log == ["apply"]
    release.set()
    for thread in threads:
        thread.join()
    assert state["value"] == "original" and log == ["apply", "undo"]
    with setting.held(apply):  # a later holder applies again
        assert log == ["apply", "undo", "apply"]
    assert log == ["apply", "undo", "apply", "undo"]


def test_nothing_to_undo():
    setting = SharedSetting()
    with setting.held(lambda: None):
        pass
    with setting.held(lambda: None):
        pass
