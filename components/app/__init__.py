"""The browser app: animate a portrait, rate candidates (sqlite store), and the Label Studio round trip."""
