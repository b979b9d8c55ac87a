"""The student-records system's messages, for admins to look through: each with its state
(received, applied, superseded by a newer change, rejected) and what applying it did or why it
was not applied. The records system sends them and a worker applies them; an admin who has put
right what stopped a rejected one applies it again from here."""

from flask import flash
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import FilterEqual

from app import inbound
from app.admin.base import AdminModelView, counted
from app.models import INBOUND_KINDS, INBOUND_STATES, InboundMessage


class InboundMessageView(AdminModelView):
    can_create = False
    can_edit = False
    can_delete = False
    column_list = ("received_at", "message_id", "kind", "state", "detail", "occurred_at",
                   "sequence")
    column_labels = {"received_at": "Received", "message_id": "Message",
                     "occurred_at": "Changed in records", "detail": "Outcome",
                     "finished_at": "Settled", "reapplied_at": "Applied again"}
    column_details_list = ("message_id", "kind", "subject", "state", "detail", "sequence",
                           "occurred_at", "sent_at", "received_at", "reapplied_at", "finished_at",
                           "payload")
    column_searchable_list = ("message_id", "subject", "detail")
    column_filters = (
        FilterEqual(InboundMessage.state, "State", options=[(s, s) for s in INBOUND_STATES]),
        FilterEqual(InboundMessage.kind, "Kind", options=[(k, k) for k in INBOUND_KINDS]),
    )
    column_default_sort = ("id", True)

    @action("apply_again", "Apply again",
            "Apply the selected rejected messages again? Do it once what stopped them is put "
            "right; messages in any other state are left as they are.")
    def apply_again(self, ids):
        again, unqueued = inbound.apply_again([int(i) for i in ids])
        if not again:
            flash("None of the selected messages was rejected: nothing to apply again.",
                  "warning")
            return
        text = f"{counted(again, 'message')} to be applied again; each row shows the outcome."
        if unqueued:
            text += (f" Redis did not answer for {counted(unqueued, 'message')}: they are "
                     "applied once the reconciler finds Redis again.")
        flash(text, "success" if not unqueued else "warning")
