"""The two doors: the WebSocket door (``websocket.FrontDoor``) and the Anthropic-compatible
HTTP door (``http.HttpDoor``), with what they serve beside (the dashboard) and their plumbing.
"""
