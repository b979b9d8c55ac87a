from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme


def init_app(app):
    from app.admin.extensions import ExtensionView
    from app.admin.flash import FlashComposeView
    from app.admin.inbound import InboundMessageView
    from app.admin.messages import MessageView
    from app.admin.operations import DashboardView, QueuesView
    from app.admin.records import model_views
    from app.extensions import db
    from app.models import Extension, InboundMessage, Message

    # A fresh Admin and fresh views per app: create_app runs many times in the tests.
    admin = Admin(
        app, name="Submissions admin",
        theme=Bootstrap4Theme(base_template="admin/site.html", fluid=True),
        index_view=DashboardView(name="Dashboard"),
    )
    admin.add_views(
        *model_views(),
        ExtensionView(Extension, db, name="Extensions", category="Teaching"),
        QueuesView(name="Queues", endpoint="admin_queues", url="queues"),
        FlashComposeView(name="Send a flash message", endpoint="admin_flash_compose",
                         url="send-flash", category="Messages"),
        InboundMessageView(InboundMessage, db, name="From student records",
                           category="Messages"),
        MessageView(Message, db, name="Conversations", category="Messages"),
    )
    return admin
