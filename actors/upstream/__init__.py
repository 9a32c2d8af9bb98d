"""The upstream side: the HTTP client boundary, the providers' endpoints, the credentials,
the StreamRelay's upstream half, and the ModelsFetcher.
"""
