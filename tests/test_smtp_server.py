"""The suite's SMTP server keeps a message exactly when its client was told it was accepted,
however often it is stopped and started under traffic. The fault suite counts receipt emails on
it, so a message kept without the client hearing 250 would show as a duplicate the product did
not send."""

import random
import smtplib
import threading
import time
from email.message import EmailMessage

import pytest

from tests.smtp import SmtpServer

CLIENTS = 6
RESTARTS = 15


def send_until(stop, port, answers, lock):
    """Send numbered messages until `stop`; answers[number] is True when the server said 250."""
    number = 0
    while not stop.is_set():
        number += 1
        key = f"{threading.get_ident()}-{number}"
        message = EmailMessage()
        message["From"] = "submissions@uni.test"
        message["To"] = "alice@uni.test"
        message["Subject"] = "Receipt"
        message["Message-ID"] = f"<{key}@submissions.test>"
        message.set_content("line of an essay\n" * random.randint(1, 2000))
        accepted = False
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.send_message(message)
                accepted = True
        except (smtplib.SMTPException, OSError):
            time.sleep(0.02)
        with lock:
            answers[key] = accepted


@pytest.mark.slow
def test_a_message_is_kept_exactly_when_its_client_heard_it_accepted():
    server = SmtpServer().start()
    answers, lock, stop = {}, threading.Lock(), threading.Event()
    clients = [threading.Thread(target=send_until, args=(stop, server.port, answers, lock))
               for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        for _ in range(RESTARTS):
            time.sleep(random.uniform(0.05, 0.4))
            server.stop()
            time.sleep(0.1)
            server.start()
        time.sleep(0.2)
    finally:
        stop.set()
        for client in clients:
            client.join(30)
        server.stop()

    kept = [message["Message-ID"].strip("<>").split("@")[0] for message in server.messages]
    accepted = sorted(key for key, was_accepted in answers.items() if was_accepted)
    refused = [key for key, was_accepted in answers.items() if not was_accepted]
    assert refused, "no stop ever cut a client off: the test did not exercise stopping"
    assert len(kept) == len(set(kept)), "a message was kept twice"
    assert sorted(kept) == accepted, (
        f"kept without the client hearing 250: {sorted(set(kept) - set(accepted))[:10]}; "
        f"accepted but not kept: {sorted(set(accepted) - set(kept))[:10]}")
