"""Flash messages: short notices to one user, pushed live on user.<id> and shown again on every
page view until the browser acknowledges that the user has had it on screen."""

from sqlalchemy import update

from app.events.publisher import emit
from app.events.topics import user_topic
from app.extensions import db
from app.models import FlashMessage, utcnow

LEVELS = ("info", "success", "warning", "error")
PENDING_SHOWN = 10


def send_flash(user_ids, text, level="info", link_url=None, link_text=None, button_text=None,
               modal=False, hide_after=None):
    """Add one message per user to the current transaction; each is pushed once that commits."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    if link_url is not None and not link_url.startswith(("/", "https://", "http://")):
        raise ValueError("link_url must be a path or an http(s) URL")
    if hide_after is not None and hide_after <= 0:
        raise ValueError("hide_after is a number of seconds above zero")
    messages = [
        FlashMessage(user_id=user_id, text=text, level=level, link_url=link_url,
                     link_text=link_text, button_text=button_text, modal=modal,
                     hide_after=hide_after)
        for user_id in dict.fromkeys(user_ids)
    ]
    db.session.add_all(messages)
    db.session.flush()
    for message in messages:
        emit("flash", message.to_dict(), [user_topic(message.user_id)])
    return messages


def pending_for(user):
    """The newest unacknowledged messages of this user, oldest first."""
    newest = db.session.execute(
        db.select(FlashMessage)
        .filter_by(user_id=user.id, acked_at=None)
        .order_by(FlashMessage.id.desc())
        .limit(PENDING_SHOWN)
    ).scalars().all()
    return newest[::-1]


def acknowledge(user, message_id):
    """Mark the user's own message as seen (once); None when it is not theirs."""
    message = db.session.get(FlashMessage, message_id)
    if message is None or message.user_id != user.id:
        return None
    if message.acked_at is None:
        db.session.execute(
            update(FlashMessage)
            .where(FlashMessage.id == message.id, FlashMessage.acked_at.is_(None))
            .values(acked_at=utcnow())
        )
        db.session.commit()
        db.session.refresh(message)
    return message
