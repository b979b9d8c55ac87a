"""Links to the site's pages in what is read away from it: emails and the flash messages jobs
send. Built from the routes, as url_for builds them, but without a request to take the host
from (a job has none): against PUBLIC_URL for a full address, from the site root for a path.
(Setting SERVER_NAME instead would also change the host of every request's own links.)"""

from urllib.parse import urlsplit

from flask import current_app


def external_url_for(public_url, endpoint, **values):
    """The page's full address under public_url (the PUBLIC_URL setting), e.g. for an email."""
    base = urlsplit(public_url)
    routes = current_app.url_map.bind(base.netloc, script_name=base.path or "/",
                                      url_scheme=base.scheme)
    return routes.build(endpoint, values, force_external=True)


def path_for(endpoint, **values):
    """The page's path from the site root, e.g. for a flash message's link."""
    return current_app.url_map.bind("localhost").build(endpoint, values)
