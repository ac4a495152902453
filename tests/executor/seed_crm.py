"""The EM-12 seed's CRM handler bodies, exactly as the seed registers them (one copy for all
the tests that must run them unchanged)."""

from __future__ import annotations

LIST = """
      const { data, error } = await ctx.db.from('contacts').select('*');
      if (error) throw error;
      return { contacts: data };
    """
GET = """
      const { data, error } = await ctx.db.from('contacts')
        .select('*')
        .eq('id', ctx.params.id)
        .single();
      if (error) throw error;
      return data;
    """
CREATE = """
      const { data, error } = await ctx.db.from('contacts')
        .insert(ctx.body)
        .select()
        .single();
      if (error) throw error;
      return data;
    """
UPDATE = """
      const { data, error } = await ctx.db.from('contacts')
        .update(ctx.body)
        .eq('id', ctx.params.id)
        .select()
        .single();
      if (error) throw error;
      return data;
    """
DELETE = """
      const { error } = await ctx.db.from('contacts')
        .delete()
        .eq('id', ctx.params.id);
      if (error) throw error;
      return { success: true };
    """
