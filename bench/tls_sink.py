#!/usr/bin/python3
"""tls_sink - the benchmark's SMTP sink with STARTTLS (bench.py's TLS table)

Postfix's smtp-sink speaks no TLS. This sink does what the benchmark
needs of one, over asyncio: EHLO (offering STARTTLS and PIPELINING),
STARTTLS (the certificate and key given), MAIL, RCPT, DATA, RSET, NOOP,
QUIT; it keeps no mail. It counts the messages received over TLS and
prints the running count as smtp-sink -c does ("mesg=N", one line each),
so bench.py's Sink reads it unchanged. A message sent without STARTTLS
is refused (530), so a round that fell back to plain text cannot pass.

    tls_sink.py CERT KEY 127.0.0.1:PORT

Runs until killed.
"""

import asyncio
import ssl
import sys


class Counter:
    def __init__(self):
        self.mesg = 0

    def add(self):
        self.mesg += 1
        sys.stdout.write("mesg=%d\n" % self.mesg)
        sys.stdout.flush()


async def session(reader, writer, ctx, counter):
    tls = False

    async def send(text):
        writer.write(text.encode())
        await writer.drain()

    await send("220 sink.bench.test ESMTP\r\n")
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            await send("250-sink.bench.test\r\n250-PIPELINING\r\n"
                       "250-8BITMIME\r\n%s250 SIZE 0\r\n"
                       % ("" if tls else "250-STARTTLS\r\n"))
        elif line[:8].upper() == b"STARTTLS" and not tls:
            await send("220 2.0.0 go ahead\r\n")
            await writer.start_tls(ctx)
            tls = True
        elif verb == b"MAIL":
            await send("250 2.1.0 Ok\r\n" if tls else
                       "530 5.7.0 Must issue a STARTTLS command first\r\n")
        elif verb == b"RCPT":
            await send("250 2.1.5 Ok\r\n" if tls else
                       "530 5.7.0 Must issue a STARTTLS command first\r\n")
        elif verb == b"DATA" and tls:
            await send("354 End data with <CR><LF>.<CR><LF>\r\n")
            while True:
                body = await reader.readline()
                if not body:
                    return
                if body in (b".\r\n", b".\n"):
                    break
            counter.add()
            await send("250 2.0.0 Ok: queued\r\n")
        elif verb == b"QUIT":
            await send("221 2.0.0 Bye\r\n")
            break
        elif verb in (b"RSET", b"NOOP"):
            await send("250 2.0.0 Ok\r\n")
        else:
            await send("502 5.5.2 Error: command not recognized\r\n")
    writer.close()


async def main(cert, key, where):
    host, _, port = where.rpartition(":")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    counter = Counter()

    async def handle(reader, writer):
        try:
            await session(reader, writer, ctx, counter)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            writer.close()

    server = await asyncio.start_server(handle, host, int(port), backlog=1000,
                                        limit=1 << 20)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: tls_sink.py CERT KEY HOST:PORT")
    try:
        asyncio.run(main(*sys.argv[1:]))
    except KeyboardInterrupt:
        pass
