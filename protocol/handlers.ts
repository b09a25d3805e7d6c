/**
 * Request handlers registered per message in a table, in the style of protomux's
 * `addMessage({ encoding, onmessage })`: the table's key is the message, so each handler gets its body
 * with the catalogue's type and no handler casts. `dispatch` is the one place that looks a request up.
 */
import type { IncomingRequest } from './connection.js';
import { P2PError } from './errors.js';
import type { MessageName } from './messages.js';

/** What answers one kind of request, with whatever the server keeps per connection (`C`). */
export type Handler<N extends MessageName, C> = (req: IncomingRequest<N>, context: C) => void | Promise<void>;

/** A server's answers, one per message it serves. */
export type HandlerTable<C> = { readonly [N in MessageName]?: Handler<N, C> };

/**
 * Runs the handler for `req` from `table`; a message the table does not serve is refused with
 * P2P_UNEXPECTED_MESSAGE, `${name} is not ${what}` (e.g. "a peer request").
 */
export function dispatch<C>(table: HandlerTable<C>, req: IncomingRequest, context: C, what: string): void | Promise<void> {
  // The table pairs each name with a handler of that name's body: looked up by `req.name`, it fits `req`.
  const handler = table[req.name] as Handler<MessageName, C> | undefined;
  if (!handler) throw new P2PError('P2P_UNEXPECTED_MESSAGE', `${req.name} is not ${what}`);
  return handler(req, context);
}
