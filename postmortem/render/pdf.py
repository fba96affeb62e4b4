"""PDF through weasyprint (imported lazily), with a URL fetcher that refuses the network."""
from __future__ import annotations

__all__ = ["OFFLINE_PROTOCOLS", "offline_url_fetcher", "pdf_bytes"]

# Figures are inline data: URIs; nothing else (http, https, ftp, file) is ever fetched.
OFFLINE_PROTOCOLS = ("data",)


def offline_url_fetcher():
    """weasyprint's own URLFetcher restricted to data: URIs; any other URL raises and is not fetched."""
    from weasyprint.urls import URLFetcher

    return URLFetcher(allowed_protocols=OFFLINE_PROTOCOLS, allow_redirects=False, timeout=1)


def pdf_bytes(html: str) -> bytes:
    """Render the report's HTML (its print styles) to PDF."""
    import logging

    from weasyprint import HTML

    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return HTML(string=html, url_fetcher=offline_url_fetcher(), base_url=None).write_pdf()
